//! Byte sizes and durations as users type them.

/// Parse a byte size: plain bytes (`1073741824`), binary units
/// (`4GiB`, `512MiB`, `1.5KiB`; case-insensitive, `B` optional: `4Gi`),
/// decimal units (`80GB`, `500MB`), or a single letter as vLLM reads it:
/// upper case is binary (`1G` = 2³⁰, `4K` = 4096), lower case decimal
/// (`1g` = 10⁹, `4k` = 4000). Spaces and `_` between digits are ignored.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let cleaned: String = text
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '_')
        .collect();
    let split = cleaned
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(cleaned.len());
    let (number, suffix) = cleaned.split_at(split);
    let bad = || {
        format!(
            "invalid size `{text}`: expected bytes or a number with a unit such as 4GiB, 512MiB, 80GB or 1G"
        )
    };
    if number.is_empty() {
        return Err(bad());
    }
    let value: f64 = number.parse().map_err(|_| bad())?;
    let multiplier = unit_multiplier(suffix).ok_or_else(bad)?;
    let bytes = value * multiplier;
    if !bytes.is_finite() || bytes > u64::MAX as f64 {
        return Err(format!("size `{text}` is too large"));
    }
    Ok(bytes.round() as u64)
}

fn unit_multiplier(suffix: &str) -> Option<f64> {
    const KI: f64 = 1024.0;
    let binary = |p: i32| Some(KI.powi(p));
    let decimal = |p: i32| Some(1000f64.powi(p));
    // Single letters: case decides (vLLM's convention).
    match suffix {
        "" | "b" | "B" => return Some(1.0),
        "K" => return binary(1),
        "M" => return binary(2),
        "G" => return binary(3),
        "T" => return binary(4),
        "k" => return decimal(1),
        "m" => return decimal(2),
        "g" => return decimal(3),
        "t" => return decimal(4),
        _ => {}
    }
    match suffix.to_ascii_lowercase().as_str() {
        "kib" | "ki" => binary(1),
        "mib" | "mi" => binary(2),
        "gib" | "gi" => binary(3),
        "tib" | "ti" => binary(4),
        "kb" => decimal(1),
        "mb" => decimal(2),
        "gb" => decimal(3),
        "tb" => decimal(4),
        _ => None,
    }
}

/// Parse a duration in seconds: `30`, `30s`, `1.5s`, `500ms`, `2m`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let bad =
        || format!("invalid duration `{text}`: expected seconds such as 30, 30s, 500ms or 2m");
    let (number, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else {
        (t, 1.0)
    };
    let v: f64 = number.trim().parse().map_err(|_| bad())?;
    if !(v.is_finite() && v >= 0.0) {
        return Err(bad());
    }
    Ok(std::time::Duration::from_secs_f64(v * scale))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let gib = 1u64 << 30;
        assert_eq!(parse_bytes("4GiB"), Ok(4 * gib));
        assert_eq!(parse_bytes("4gib"), Ok(4 * gib));
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("1G"), Ok(gib));
        assert_eq!(parse_bytes("1g"), Ok(1_000_000_000));
        assert_eq!(parse_bytes("80GB"), Ok(80_000_000_000));
        assert_eq!(parse_bytes("1.5KiB"), Ok(1536));
        assert_eq!(parse_bytes("4K"), Ok(4096));
        assert_eq!(parse_bytes("4k"), Ok(4000));
        assert_eq!(parse_bytes("1073741824"), Ok(gib));
        assert_eq!(parse_bytes("24 GiB"), Ok(24 * gib));
        assert_eq!(parse_bytes("1_000"), Ok(1000));
        assert_eq!(parse_bytes("100B"), Ok(100));
        for bad in ["", "GiB", "4XB", "-1G", "1..2G", "4 GiBs"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        use std::time::Duration;
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1").is_err());
    }
}
