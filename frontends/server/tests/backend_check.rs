//! `kiln backend check PATH`: exit status 0 and a table of passes for the C
//! backend example; exit status 1 and the failing operation named for a
//! plugin that gets an operation wrong; a clear error for a missing file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn compile(source: &Path, out_dir: &Path, stem: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let library = out_dir.join(format!(
        "{}{stem}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let output = Command::new(&cc)
        .args(["-std=c99", "-O1", "-shared", "-fPIC", "-I"])
        .arg(root.join("plugins/abi/include"))
        .arg("-o")
        .arg(&library)
        .arg(source)
        .arg("-lm")
        .output()
        .unwrap_or_else(|e| panic!("this test needs a C compiler ({cc}: {e}); set CC"));
    assert!(
        output.status.success(),
        "{cc} failed on {}:\n{}",
        source.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    library
}

fn check(library: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["backend", "check"])
        .arg(library)
        .env("RUST_LOG", "error")
        .output()
        .expect("run kiln")
}

#[test]
fn the_c_backend_example_passes() {
    let dir = tempfile::tempdir().unwrap();
    let source =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/c-backend/kiln_c_backend.c");
    let out = check(&compile(&source, dir.path(), "kiln_backend_c"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("c backend (ABI 1."), "{stdout}");
    let attention = stdout
        .lines()
        .find(|l| l.starts_with("attention"))
        .expect("an attention row");
    assert!(attention.contains(" pass "), "{attention}");
    let sample = stdout
        .lines()
        .find(|l| l.starts_with("sample"))
        .expect("a sample row");
    assert!(sample.contains("skip"), "{sample}");
    assert!(stdout.contains("all checks passed"), "{stdout}");
}

/// Declares `OP_ADD` and computes a difference.
const WRONG_ADD: &str = r#"
#include "kiln_backend.h"
#include <stdlib.h>
#include <string.h>
static void dev_close(void *d) { (void)d; }
static KilnStatus mem(void *d, uint64_t *f, uint64_t *t) { (void)d; *f = 1 << 30; *t = 1 << 30; return KILN_OK; }
static KilnStatus alloc_buf(void *d, uint64_t n, KilnBuffer *out) { (void)d; *out = calloc(n + 1, 1); return *out ? KILN_OK : KILN_OUT_OF_MEMORY; }
static void free_buf(void *d, KilnBuffer b) { (void)d; free(b); }
static KilnStatus write_buf(void *d, KilnBuffer b, uint64_t o, const uint8_t *s, uint64_t n) { (void)d; memcpy((uint8_t *)b + o, s, n); return KILN_OK; }
static KilnStatus read_buf(void *d, KilnBuffer b, uint64_t o, uint8_t *s, uint64_t n) { (void)d; memcpy(s, (uint8_t *)b + o, n); return KILN_OK; }
static KilnStatus copy_buf(void *d, const KilnBufferCopy *c) { (void)d; (void)c; return KILN_UNSUPPORTED; }
static KilnStatus sync_dev(void *d) { (void)d; return KILN_OK; }
static KilnStatus prep(void *d, const KilnWeightDesc *w, KilnWeight *o) { (void)d; (void)w; (void)o; return KILN_UNSUPPORTED; }
static void rel(void *d, KilnWeight w) { (void)d; (void)w; }
static int32_t supports(void *d, const KilnSupportQuery *q) {
    (void)d; return q->opcode == KILN_OP_ADD && q->act_dtype == KILN_F32 && q->weight_format == KILN_WEIGHT_NONE;
}
static float *at(const KilnTensor *t) { return (float *)((uint8_t *)t->buffer + t->offset); }
static KilnStatus execute(void *d, const KilnOp *ops, uint64_t n) {
    uint64_t i, j, count;
    (void)d;
    for (i = 0; i < n; i++) {
        count = ops[i].tensors[0].dims[0] * (ops[i].tensors[0].rank > 1 ? ops[i].tensors[0].dims[1] : 1);
        for (j = 0; j < count; j++) at(&ops[i].tensors[2])[j] = at(&ops[i].tensors[0])[j] - at(&ops[i].tensors[1])[j];
    }
    return KILN_OK;
}
static const KilnDeviceVtable TABLE = { sizeof(KilnDeviceVtable), dev_close, mem, alloc_buf, free_buf,
    write_buf, read_buf, copy_buf, sync_dev, prep, rel, supports, execute, NULL, NULL, NULL, NULL };
static uint32_t count(void) { return 1; }
static KilnStatus info(uint32_t i, KilnDeviceInfo *out) {
    (void)i; out->kind = KILN_DEVICE_CPU; out->memory_total = 1 << 30; out->memory_free = 1 << 30;
    strcpy((char *)out->name, "wrong0"); return KILN_OK;
}
static KilnStatus open_dev(uint32_t i, const char *p, KilnDevice *out) { (void)i; (void)p; out->handle = NULL; out->vtable = &TABLE; return KILN_OK; }
static const char *last(void) { return NULL; }
static const KilnBackendRegistration REG = { sizeof(KilnBackendRegistration), KILN_ABI_VERSION, "wrong",
    count, info, open_dev, last, NULL };
uint32_t kiln_plugin_abi_version(void) { return KILN_ABI_VERSION; }
int32_t kiln_backend_score(void) { return 1; }
const KilnBackendRegistration *kiln_backend_init(const KilnHostApi *h) { (void)h; return &REG; }
"#;

#[test]
fn a_wrong_operation_fails_the_check_with_a_nonzero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("wrong_add.c");
    std::fs::write(&source, WRONG_ADD).unwrap();
    let out = check(&compile(&source, dir.path(), "kiln_backend_wrong"));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let add = stdout
        .lines()
        .find(|l| l.starts_with("add "))
        .expect("an add row");
    assert!(add.contains("FAIL"), "{add}");
    assert!(
        stderr.contains("wrong: 1 conformance cases failed"),
        "{stderr}"
    );
}

#[test]
fn a_missing_library_is_an_error_naming_it() {
    let out = check(Path::new("/nonexistent/libkiln_backend_nothing.so"));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/libkiln_backend_nothing.so does not exist"),
        "{stderr}"
    );
}
