//! `examples/plugin-template` builds as a third party builds a plugin (its
//! own workspace, the SDK by path) and passes the check for what it declares.

use std::path::Path;
use std::process::Command;

use kiln_backend_conformance::check_library;

#[test]
fn the_out_of_tree_template_builds_and_passes_the_check() {
    let manifest =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/plugin-template/Cargo.toml");
    // Its own target directory: the outer cargo holds this workspace's lock.
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-template");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(&cargo)
        .args(["build", "--release", "--manifest-path"])
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cargo}: {e}"));
    assert!(
        output.status.success(),
        "building the template failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let library = target.join("release").join(format!(
        "{}kiln_backend_template{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));
    let check = check_library(&library, "{}").expect("the template loads");
    assert_eq!(check.backend, "template");
    let report = &check.reports[0];
    eprintln!("{}", report.table());
    assert!(check.is_success(), "{}", report.table());
    let passed: Vec<&str> = report.passed().map(|c| c.name.as_str()).collect();
    for name in ["add", "silu_mul", "scale", "scale accumulate"] {
        assert!(passed.contains(&name), "{name} did not pass: {passed:?}");
    }
}
