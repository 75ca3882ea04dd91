//! `kiln pull` and `kiln list`.

use kiln_hub::{FetchOptions, FetchPolicy, Need, ProgressMode, human_bytes};

use super::{CliError, hub_from_env, log_resolved, parse_model};
use crate::cli::{ListArgs, PullArgs};

/// Fetch (or re-verify) a model; print where it is.
pub fn pull(args: &PullArgs) -> Result<(), CliError> {
    let progress = if args.quiet || args.print_path {
        ProgressMode::Hidden
    } else {
        ProgressMode::Bars
    };
    let hub = hub_from_env(progress)?;
    let spec = parse_model(&args.model)?;
    let options = FetchOptions {
        revision: args.model.revision.clone(),
        need: Need::Weights,
        policy: FetchPolicy::Refresh,
    };
    let model = hub.resolve(&spec, &options)?;
    log_resolved(&spec, &model);
    if args.print_path {
        println!("{}", model.path.display());
    } else {
        let size = path_size(&model.path);
        eprintln!(
            "{spec}: {} ({}{})",
            model.path.display(),
            human_bytes(size),
            if model.downloaded_bytes > 0 {
                format!(", {} downloaded", human_bytes(model.downloaded_bytes))
            } else {
                ", already up to date".to_string()
            }
        );
    }
    Ok(())
}

fn path_size(p: &std::path::Path) -> u64 {
    if p.is_file() {
        return std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    }
    std::fs::read_dir(p)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Print the cached models.
pub fn list(args: &ListArgs) -> Result<(), CliError> {
    let cache = kiln_hub::Cache::from_env()?;
    let models = cache.list_cached()?;
    if args.json {
        let text =
            serde_json::to_string_pretty(&models).map_err(|e| CliError::Usage(e.to_string()))?;
        println!("{text}");
        return Ok(());
    }
    print!("{}", list_table(&models, cache.root()));
    Ok(())
}

/// The `kiln list` table.
pub fn list_table(models: &[kiln_hub::CachedModel], root: &std::path::Path) -> String {
    if models.is_empty() {
        return format!(
            "no models in {} (fetch one with `kiln pull MODEL`)\n",
            root.display()
        );
    }
    let width = models
        .iter()
        .map(|m| m.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = format!(
        "{:width$}  {:>10}  {:>5}  {:10}  PATH\n",
        "NAME", "SIZE", "FILES", "STATUS"
    );
    let mut total = 0;
    for m in models {
        total += m.bytes;
        let status = if m.complete {
            "complete".to_string()
        } else if m.partial_bytes > 0 {
            format!("partial (+{})", human_bytes(m.partial_bytes))
        } else {
            "incomplete".to_string()
        };
        out.push_str(&format!(
            "{:width$}  {:>10}  {:>5}  {:10}  {}\n",
            m.name,
            human_bytes(m.bytes),
            m.files,
            status,
            m.path.display()
        ));
    }
    out.push_str(&format!(
        "{} model(s), {} in {}\n",
        models.len(),
        human_bytes(total),
        root.display()
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lists_sizes_and_totals() {
        let models = vec![kiln_hub::CachedModel {
            name: "smollm2-135m-instruct".into(),
            path: "/c/models/smollm2-135m-instruct".into(),
            bytes: 98_362_432,
            partial_bytes: 0,
            files: 1,
            complete: true,
        }];
        let t = list_table(&models, std::path::Path::new("/c"));
        assert!(
            t.contains("smollm2-135m-instruct    93.8 MiB      1  complete"),
            "{t}"
        );
        assert!(t.ends_with("1 model(s), 93.8 MiB in /c\n"), "{t}");
        assert!(list_table(&[], std::path::Path::new("/c")).contains("kiln pull"));
    }
}
