//! The house stays in layers: runs `scripts/module_graph.py`, which reads `src/` and fails on
//! an import of a higher layer or an import cycle (see docs/architecture.md, "Layers").

use std::process::Command;

/// No file of `src/` imports a higher layer, and no import cycle exists.
#[test]
fn src_imports_point_down() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/module_graph.py");
    let output = match Command::new("python3").arg(script).output() {
        Ok(output) => output,
        Err(e) => panic!("python3 is needed to check the module layers: {e}"),
    };
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "upward import or cycle in src/:\n{report}{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
