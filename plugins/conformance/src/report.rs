//! What a conformance run found, case by case, and its summary table.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use kiln_plugin_abi::ops::opcode_name;
use kiln_plugin_abi::*;

/// How one case ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Within tolerance.
    Passed(Errors),
    /// Outside tolerance.
    Failed(Errors),
    /// A call into the device under test (or the reference) failed.
    Error(String),
    /// The device under test declines the case through `supports()`.
    Skipped,
}

/// How far a result is from the reference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Errors {
    /// Largest absolute difference.
    pub max_abs: f64,
    /// `max_abs` relative to the reference's RMS: what the tolerance bounds.
    pub relative: f64,
    /// The bound on `relative` (0: bit for bit).
    pub tolerance: f64,
}

/// One comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// The `OP_*` code exercised.
    pub opcode: u32,
    /// The weight format exercised, if the operation takes a weight.
    pub weight_format: Option<KilnWeightFormat>,
    /// The activation dtype of the device under test.
    pub act_dtype: KilnDType,
    /// What was compared, e.g. `linear q4_0 n=5 decode=5 Add`.
    pub name: String,
    /// The result.
    pub outcome: Outcome,
}

impl Case {
    /// True when the case ran and failed or errored.
    pub fn is_failure(&self) -> bool {
        matches!(self.outcome, Outcome::Failed(_) | Outcome::Error(_))
    }
}

/// Every case of one run (one device, one activation dtype).
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The cases in the order they ran.
    pub cases: Vec<Case>,
}

impl Report {
    /// Cases within tolerance.
    pub fn passed(&self) -> impl Iterator<Item = &Case> {
        self.cases
            .iter()
            .filter(|c| matches!(c.outcome, Outcome::Passed(_)))
    }

    /// Cases that failed or errored.
    pub fn failed(&self) -> impl Iterator<Item = &Case> {
        self.cases.iter().filter(|c| c.is_failure())
    }

    /// Names of the cases the device declined.
    pub fn skipped(&self) -> impl Iterator<Item = &str> {
        self.cases
            .iter()
            .filter(|c| c.outcome == Outcome::Skipped)
            .map(|c| c.name.as_str())
    }

    /// True when no case failed or errored.
    pub fn is_success(&self) -> bool {
        self.failed().next().is_none()
    }

    /// One row per operation, weight format and activation dtype: its
    /// cases, the verdict (`pass`, `FAIL` or `skip`), the worst absolute
    /// and relative errors, and the first error message if any.
    pub fn table(&self) -> String {
        let mut rows: BTreeMap<(u32, Option<KilnWeightFormat>, KilnDType), Row> = BTreeMap::new();
        for c in &self.cases {
            rows.entry((c.opcode, c.weight_format, c.act_dtype))
                .or_default()
                .add(c);
        }
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<13} {:<7} {:<5} {:>5}  {:<6} {:>11} {:>11} {:>9}",
            "op", "weight", "act", "cases", "result", "max abs err", "rel err", "tolerance"
        );
        for ((opcode, format, act), row) in rows {
            let mut line = String::new();
            let _ = write!(
                line,
                "{:<13} {:<7} {:<5} {:>5}  {:<6}",
                opcode_name(opcode),
                format.map_or("-", weight_format_name),
                dtype_name(act),
                row.cases,
                row.verdict()
            );
            if row.ran > 0 && row.message.is_none() {
                let _ = write!(
                    line,
                    " {:>11.2e} {:>11.2e} {:>9.0e}",
                    row.max_abs, row.relative, row.tolerance
                );
            }
            if let Some(m) = &row.message {
                let _ = write!(line, " {m}");
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[derive(Default)]
struct Row {
    cases: usize,
    ran: usize,
    failed: bool,
    max_abs: f64,
    relative: f64,
    tolerance: f64,
    /// `relative / tolerance` of the case shown.
    margin: f64,
    message: Option<String>,
}

fn margin(e: &Errors) -> f64 {
    if e.relative == 0.0 {
        0.0
    } else if e.tolerance == 0.0 {
        f64::INFINITY
    } else {
        e.relative / e.tolerance
    }
}

impl Row {
    fn add(&mut self, c: &Case) {
        self.cases += 1;
        match &c.outcome {
            Outcome::Passed(e) | Outcome::Failed(e) => {
                self.ran += 1;
                self.failed |= matches!(c.outcome, Outcome::Failed(_));
                self.max_abs = self.max_abs.max(e.max_abs);
                // Show the case closest to (or furthest past) its tolerance;
                // among equals, the loosest tolerance.
                let margin = margin(e);
                let worst = self.ran == 1
                    || margin > self.margin
                    || (margin == self.margin && e.tolerance > self.tolerance);
                if worst {
                    (self.margin, self.relative, self.tolerance) =
                        (margin, e.relative, e.tolerance);
                }
            }
            Outcome::Error(m) => {
                self.ran += 1;
                self.failed = true;
                self.message
                    .get_or_insert_with(|| format!("{}: {m}", c.name));
            }
            Outcome::Skipped => {}
        }
    }

    fn verdict(&self) -> &'static str {
        if self.failed {
            "FAIL"
        } else if self.ran == 0 {
            "skip"
        } else {
            "pass"
        }
    }
}

/// Short name of a dtype.
pub fn dtype_name(dtype: KilnDType) -> &'static str {
    match dtype {
        KILN_F32 => "f32",
        KILN_F16 => "f16",
        KILN_BF16 => "bf16",
        KILN_I32 => "i32",
        KILN_I64 => "i64",
        KILN_U8 => "u8",
        KILN_I8 => "i8",
        _ => "?",
    }
}

/// Short name of a weight format, as GGUF and checkpoints spell it.
pub fn weight_format_name(format: KilnWeightFormat) -> &'static str {
    match format {
        KILN_WEIGHT_F32 => "f32",
        KILN_WEIGHT_F16 => "f16",
        KILN_WEIGHT_BF16 => "bf16",
        KILN_WEIGHT_GGUF_Q4_0 => "q4_0",
        KILN_WEIGHT_GGUF_Q4_1 => "q4_1",
        KILN_WEIGHT_GGUF_Q5_0 => "q5_0",
        KILN_WEIGHT_GGUF_Q5_1 => "q5_1",
        KILN_WEIGHT_GGUF_Q8_0 => "q8_0",
        KILN_WEIGHT_GGUF_Q2_K => "q2_k",
        KILN_WEIGHT_GGUF_Q3_K => "q3_k",
        KILN_WEIGHT_GGUF_Q4_K => "q4_k",
        KILN_WEIGHT_GGUF_Q5_K => "q5_k",
        KILN_WEIGHT_GGUF_Q6_K => "q6_k",
        KILN_WEIGHT_GGUF_IQ4_NL => "iq4_nl",
        KILN_WEIGHT_GGUF_IQ4_XS => "iq4_xs",
        KILN_WEIGHT_GPTQ => "gptq",
        KILN_WEIGHT_AWQ => "awq",
        KILN_WEIGHT_INT8 => "int8",
        KILN_WEIGHT_INT_GROUPS => "int_groups",
        KILN_WEIGHT_FP8_E4M3 => "fp8_e4m3",
        _ => "?",
    }
}
