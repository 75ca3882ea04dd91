//! Every deployment file in `examples/deploy` parses, and every `kiln`
//! command line and `KILN_*` variable in them is real: command lines are
//! parsed with the actual clap definition.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser};
use kiln::cli::Cli;
use serde_yaml::Value;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/deploy")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Environment variables the CLI reads, plus those the model cache and pip fetching read.
fn known_env() -> BTreeSet<String> {
    let mut names: BTreeSet<String> = ["KILN_CACHE", "KILN_PYTHON"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let root = Cli::command();
    let mut stack = vec![&root];
    while let Some(cmd) = stack.pop() {
        for arg in cmd.get_arguments() {
            if let Some(env) = arg.get_env() {
                names.insert(env.to_string_lossy().into_owned());
            }
        }
        stack.extend(cmd.get_subcommands());
    }
    names
}

#[derive(Default)]
struct Found {
    /// (file, argv) of every kiln command line.
    commands: Vec<(String, Vec<String>)>,
    /// (file, name) of every KILN_* variable set.
    env: Vec<(String, String)>,
}

fn as_strings(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Sequence(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                Value::Bool(b) => Some(b.to_string()),
                _ => None,
            })
            .collect(),
        Value::String(s) => Some(s.split_whitespace().map(str::to_string).collect()),
        _ => None,
    }
}

/// Walk a YAML document: containers/services whose image is Kiln's give
/// command lines; `environment` maps and `env` lists give variables.
fn walk(file: &str, v: &Value, found: &mut Found) {
    match v {
        Value::Mapping(m) => {
            let is_kiln = m
                .get("image")
                .and_then(Value::as_str)
                .is_some_and(|i| i.contains("kiln"));
            if is_kiln {
                let mut argv = vec!["kiln".to_string()];
                if let Some(cmd) = m.get("command").and_then(as_strings) {
                    argv.extend(cmd.into_iter().skip_while(|a| a == "kiln"));
                }
                if let Some(args) = m.get("args").and_then(as_strings) {
                    argv.extend(args);
                }
                found.commands.push((file.to_string(), argv));
            }
            if let Some(Value::Mapping(envs)) = m.get("environment") {
                for k in envs.keys().filter_map(Value::as_str) {
                    found.env.push((file.to_string(), k.to_string()));
                }
            }
            if let Some(Value::Sequence(envs)) = m.get("env") {
                for e in envs {
                    if let Some(name) = e.get("name").and_then(Value::as_str) {
                        found.env.push((file.to_string(), name.to_string()));
                    }
                }
            }
            for (_, child) in m {
                walk(file, child, found);
            }
        }
        Value::Sequence(items) => items.iter().for_each(|i| walk(file, i, found)),
        _ => {}
    }
}

/// `CMD [...]`/`ENTRYPOINT [...]` JSON arrays and `ENV` names of a Dockerfile.
fn dockerfile(file: &str, text: &str, found: &mut Found) {
    let joined = text.replace("\\\n", " ");
    let mut entrypoint: Vec<String> = Vec::new();
    for line in joined.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("ENTRYPOINT ") {
            entrypoint = serde_json::from_str(rest)
                .unwrap_or_else(|e| panic!("{file}: ENTRYPOINT is not a JSON array: {e}"));
        } else if let Some(rest) = line.strip_prefix("CMD ") {
            let cmd: Vec<String> = serde_json::from_str(rest)
                .unwrap_or_else(|e| panic!("{file}: CMD is not a JSON array: {e}"));
            assert_eq!(
                entrypoint,
                ["kiln"],
                "{file}: CMD before ENTRYPOINT [\"kiln\"]"
            );
            let mut argv = entrypoint.clone();
            argv.extend(cmd);
            found.commands.push((file.to_string(), argv));
        } else if let Some(rest) = line.strip_prefix("ENV ") {
            for assignment in rest.split_whitespace() {
                if let Some((name, _)) = assignment.split_once('=') {
                    found.env.push((file.to_string(), name.to_string()));
                }
            }
        }
    }
}

fn scan() -> Found {
    let mut found = Found::default();
    let dir = deploy_dir();
    for path in files(&dir) {
        let name = path.strip_prefix(&dir).unwrap().display().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        match ext {
            "yml" | "yaml" => {
                let mut docs = 0;
                for doc in serde_yaml::Deserializer::from_str(&text) {
                    let v = Value::deserialize(doc)
                        .unwrap_or_else(|e| panic!("{name}: invalid YAML: {e}"));
                    walk(&name, &v, &mut found);
                    docs += 1;
                }
                assert!(docs > 0, "{name} is empty");
            }
            "json" => {
                let v: serde_json::Value = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("{name}: invalid JSON: {e}"));
                let v: Value = serde_yaml::to_value(v).unwrap();
                walk(&name, &v, &mut found);
            }
            _ if name.contains("Dockerfile") => dockerfile(&name, &text, &mut found),
            _ => {}
        }
    }
    found
}

use serde::Deserialize;

#[test]
fn every_kiln_command_line_parses() {
    let found = scan();
    assert!(
        found.commands.len() >= 6,
        "expected the compose, k8s and Dockerfile command lines: {:?}",
        found.commands
    );
    let mut subcommands = BTreeSet::new();
    for (file, argv) in &found.commands {
        let cli = Cli::try_parse_from(argv)
            .unwrap_or_else(|e| panic!("{file}: `{}` does not parse:\n{e}", argv.join(" ")));
        subcommands.insert(format!("{:?}", std::mem::discriminant(&cli.command)));
        if let kiln::cli::Command::Serve(args) = &cli.command {
            kiln::commands::serve::validate_engine_args(&args.engine)
                .unwrap_or_else(|e| panic!("{file}: `{}`: {e}", argv.join(" ")));
            kiln_hub::ModelSpec::parse(args.model.model())
                .unwrap_or_else(|e| panic!("{file}: {e}"));
        }
    }
    assert!(subcommands.len() >= 2, "serve and pull are both used");
}

#[test]
fn every_kiln_variable_is_read_by_kiln() {
    let known = known_env();
    let found = scan();
    let used: Vec<_> = found
        .env
        .iter()
        .filter(|(_, n)| n.starts_with("KILN_"))
        .collect();
    assert!(used.len() >= 5, "{used:?}");
    for (file, name) in used {
        assert!(
            known.contains(name),
            "{file}: {name} is not read by kiln (known: {known:?})"
        );
    }
}

#[test]
fn a_wrong_flag_would_be_caught() {
    // The check above is only worth something if bad lines fail.
    assert!(Cli::try_parse_from(["kiln", "serve", "m", "--gpu-mem-util", "0.9"]).is_err());
    let mut f = Found::default();
    dockerfile(
        "x",
        "ENTRYPOINT [\"kiln\"]\nCMD [\"serve\", \"--max-model-length\", \"8\"]\n",
        &mut f,
    );
    assert!(Cli::try_parse_from(&f.commands[0].1).is_err());
}
