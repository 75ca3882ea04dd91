//! ABI compatibility: a plugin built against ABI 1.0, whose device table
//! ends before the entries later minors append, loads and runs in this
//! host, which reads no entry past the table's `struct_size`; a plugin of
//! a newer minor loads too; another major is refused naming both versions.

use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_plugin_abi::ops;
use kiln_plugin_abi::{KILN_ABI_VERSION, KILN_CAP_DEVICE_SAMPLING, KILN_F32, version_string};
use kiln_plugin_host::{BackendRegistry, LoadError};

const HEADER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../abi/include");

fn build(dir: &Path, stem: &str, source: &str) -> PathBuf {
    let src = dir.join(format!("{stem}.c"));
    std::fs::write(&src, source).unwrap();
    let out = dir.join(format!(
        "{}{stem}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let output = Command::new(&cc)
        .args([
            "-std=c99", "-Wall", "-Werror", "-shared", "-fPIC", "-I", HEADER_DIR, "-o",
        ])
        .arg(&out)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("this test needs a C compiler ({cc}: {e}); set CC"));
    assert!(
        output.status.success(),
        "{cc} failed on {stem}.c:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    out
}

/// A plugin as built against ABI `VERSION`: its device table is a frozen
/// struct holding only the entries every 1.x table has (no graph entries),
/// yet its device claims graphs and device sampling. It adds f32 tensors.
const OLD_PLUGIN: &str = r#"
#include "kiln_backend.h"
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint32_t struct_size;
    void (*close)(void *);
    KilnStatus (*memory_info)(void *, uint64_t *, uint64_t *);
    KilnStatus (*alloc_buffer)(void *, uint64_t, KilnBuffer *);
    void (*free_buffer)(void *, KilnBuffer);
    KilnStatus (*write_buffer)(void *, KilnBuffer, uint64_t, const uint8_t *, uint64_t);
    KilnStatus (*read_buffer)(void *, KilnBuffer, uint64_t, uint8_t *, uint64_t);
    KilnStatus (*copy_buffer)(void *, const KilnBufferCopy *);
    KilnStatus (*synchronize)(void *);
    KilnStatus (*prepare_weight)(void *, const KilnWeightDesc *, KilnWeight *);
    void (*release_weight)(void *, KilnWeight);
    int32_t (*supports)(void *, const KilnSupportQuery *);
    KilnStatus (*execute)(void *, const KilnOp *, uint64_t);
} FrozenDeviceTable;

static void dev_close(void *d) { (void)d; }
static KilnStatus mem(void *d, uint64_t *f, uint64_t *t) { (void)d; *f = 1 << 20; *t = 1 << 20; return 0; }
static KilnStatus alloc_buf(void *d, uint64_t n, KilnBuffer *out) { (void)d; *out = calloc(n + 1, 1); return *out ? 0 : 2; }
static void free_buf(void *d, KilnBuffer b) { (void)d; free(b); }
static KilnStatus write_buf(void *d, KilnBuffer b, uint64_t o, const uint8_t *s, uint64_t n) { (void)d; memcpy((uint8_t *)b + o, s, n); return 0; }
static KilnStatus read_buf(void *d, KilnBuffer b, uint64_t o, uint8_t *s, uint64_t n) { (void)d; memcpy(s, (uint8_t *)b + o, n); return 0; }
static KilnStatus copy_buf(void *d, const KilnBufferCopy *c) { (void)d; (void)c; return 1; }
static KilnStatus sync_dev(void *d) { (void)d; return 0; }
static KilnStatus prep(void *d, const KilnWeightDesc *w, KilnWeight *o) { (void)d; (void)w; (void)o; return 1; }
static void rel(void *d, KilnWeight w) { (void)d; (void)w; }
static int32_t supports(void *d, const KilnSupportQuery *q) { (void)d; return q->opcode == KILN_OP_ADD && q->act_dtype == KILN_F32; }
static float *at(const KilnTensor *t) { return (float *)((uint8_t *)t->buffer + t->offset); }
static KilnStatus execute(void *d, const KilnOp *ops, uint64_t n) {
    uint64_t i, j;
    (void)d;
    for (i = 0; i < n; i++) {
        const KilnOp *op = &ops[i];
        if (op->opcode != KILN_OP_ADD) return 1;
        for (j = 0; j < op->tensors[0].dims[0]; j++)
            at(&op->tensors[2])[j] = at(&op->tensors[0])[j] + at(&op->tensors[1])[j];
    }
    return 0;
}

static const FrozenDeviceTable TABLE = { sizeof(FrozenDeviceTable), dev_close, mem, alloc_buf, free_buf,
    write_buf, read_buf, copy_buf, sync_dev, prep, rel, supports, execute };

static uint32_t count(void) { return 1; }
static KilnStatus info(uint32_t i, KilnDeviceInfo *out) {
    (void)i;
    out->kind = KILN_DEVICE_CPU; out->memory_total = 1 << 20; out->memory_free = 1 << 20;
    out->capabilities = KILN_CAP_GRAPHS | KILN_CAP_DEVICE_SAMPLING | KILN_CAP_HOST_MEMORY;
    strcpy((char *)out->name, "old0");
    return 0;
}
static KilnStatus open_dev(uint32_t i, const char *p, KilnDevice *out) {
    (void)i; (void)p; out->handle = NULL; out->vtable = (const KilnDeviceVtable *)&TABLE; return 0;
}
static const char *last(void) { return "old plugin error"; }

/* Built against 1.0: the registration ends before get_proc_address, too. */
typedef struct {
    uint32_t struct_size; uint32_t abi_version; const char *name;
    uint32_t (*device_count)(void);
    KilnStatus (*device_info)(uint32_t, KilnDeviceInfo *);
    KilnStatus (*open_device)(uint32_t, const char *, KilnDevice *);
    const char *(*last_error)(void);
} FrozenRegistration;
static const FrozenRegistration REG = { sizeof(FrozenRegistration), VERSION, "old", count, info, open_dev, last };

uint32_t kiln_plugin_abi_version(void) { return VERSION; }
int32_t kiln_backend_score(void) { return 1; }
const KilnBackendRegistration *kiln_backend_init(const KilnHostApi *h) { (void)h; return (const KilnBackendRegistration *)&REG; }
"#;

fn old_plugin(dir: &Path, stem: &str, version: &str) -> PathBuf {
    build(
        dir,
        stem,
        &format!("#define VERSION ({version})\n{OLD_PLUGIN}"),
    )
}

#[test]
fn a_plugin_with_the_1_0_table_layout_loads_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = old_plugin(dir.path(), "kiln_backend_old", "(1u << 16) | 0u");
    let loaded = BackendRegistry::new()
        .load(&path)
        .expect("a 1.0 plugin loads");
    assert_eq!(version_string(loaded.abi_version), "1.0");
    assert!(loaded.backend.proc_address("anything").is_none());
    let dev = loaded.backend.open(0, "{}").expect("its device opens");
    // Its table has no graph entries, whatever its capability bits say;
    // and a 1.0 plugin never samples on the device (its parameter rows differ).
    assert!(!dev.has_graphs());
    assert!(dev.graph_begin().unwrap_err().is_unsupported());
    assert!(!dev.info().has(KILN_CAP_DEVICE_SAMPLING));
    assert!(dev.supports(ops::OP_ADD, None, KILN_F32));

    let values = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let (a, b, out) = (
        dev.alloc(16).unwrap(),
        dev.alloc(16).unwrap(),
        dev.alloc(16).unwrap(),
    );
    dev.write(&a, 0, &values(&[1.0, 2.0, 3.0, 4.0])).unwrap();
    dev.write(&b, 0, &values(&[0.5, 0.5, 0.5, 0.5])).unwrap();
    dev.execute(&[ops::add(
        a.view(0, KILN_F32, &[4]),
        b.view(0, KILN_F32, &[4]),
        out.view(0, KILN_F32, &[4]),
    )])
    .unwrap();
    let mut bytes = [0u8; 16];
    dev.read(&out, 0, &mut bytes).unwrap();
    assert_eq!(bytes.to_vec(), values(&[1.5, 2.5, 3.5, 4.5]));
}

#[test]
fn a_plugin_of_a_newer_minor_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = old_plugin(dir.path(), "kiln_backend_newer", "(1u << 16) | 999u");
    let loaded = BackendRegistry::new()
        .load(&path)
        .expect("a 1.999 plugin loads");
    assert_eq!(version_string(loaded.abi_version), "1.999");
}

#[test]
fn another_major_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let path = old_plugin(dir.path(), "kiln_backend_next", "(2u << 16) | 0u");
    let err = BackendRegistry::new().load(&path).unwrap_err();
    assert!(matches!(err, LoadError::AbiMismatch { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("ABI 2.0") && message.contains(&version_string(KILN_ABI_VERSION)),
        "{message}"
    );
}

#[test]
fn a_device_table_too_short_for_the_required_entries_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let source = format!(
        "#define VERSION ((1u << 16) | 0u)\n{}",
        OLD_PLUGIN.replace(
            "{ sizeof(FrozenDeviceTable), dev_close",
            "{ (uint32_t)offsetof(FrozenDeviceTable, execute), dev_close"
        )
    );
    let path = build(
        dir.path(),
        "kiln_backend_short",
        &format!("#include <stddef.h>\n{source}"),
    );
    let loaded = BackendRegistry::new()
        .load(&path)
        .expect("the library loads");
    let err = loaded.backend.open(0, "{}").unwrap_err();
    assert!(err.message.contains("shorter than"), "{err}");
}

#[test]
fn a_registration_too_short_for_the_required_entries_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let source = format!(
        "#include <stddef.h>\n#define VERSION ((1u << 16) | 0u)\n{}",
        OLD_PLUGIN.replace(
            "{ sizeof(FrozenRegistration), VERSION",
            "{ (uint32_t)offsetof(FrozenRegistration, last_error), VERSION"
        )
    );
    let path = build(dir.path(), "kiln_backend_stub", &source);
    let err = BackendRegistry::new().load(&path).unwrap_err();
    assert!(matches!(err, LoadError::InitFailed { .. }), "{err}");
    assert!(err.to_string().contains("shorter than"), "{err}");
}
