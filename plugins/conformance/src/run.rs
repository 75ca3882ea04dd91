//! The state of one run: both devices, the input generator, the tolerance
//! and the report being filled.

use kiln_plugin_abi::safe::AbiResult;
use kiln_plugin_abi::*;

use crate::data::Rng;
use crate::report::{Case, Errors, Outcome, Report};
use crate::side::Side;

pub(crate) struct Run<'a> {
    pub(crate) dut: Side<'a>,
    pub(crate) reference: Side<'a>,
    pub(crate) rng: Rng,
    /// Relative to each output's RMS.
    pub(crate) tolerance: f64,
    pub(crate) report: Report,
}

impl Run<'_> {
    /// False, recording `name` as skipped, when the device under test
    /// declines `opcode` (with `format`) in its activation dtype.
    pub(crate) fn dut_supports(
        &mut self,
        opcode: u32,
        format: Option<KilnWeightFormat>,
        name: &str,
    ) -> bool {
        let ok = self.dut.supports(opcode, format);
        if !ok {
            self.push(opcode, format, name.to_string(), Outcome::Skipped);
        }
        ok
    }

    /// Compare the device under test's output with the reference's.
    pub(crate) fn compare(
        &mut self,
        opcode: u32,
        format: Option<KilnWeightFormat>,
        name: String,
        got: AbiResult<Vec<f32>>,
        want: AbiResult<Vec<f32>>,
        tolerance: f64,
    ) {
        let outcome = match (got, want) {
            (Err(e), _) => Outcome::Error(e.to_string()),
            (_, Err(e)) => Outcome::Error(format!("the reference failed: {e}")),
            (Ok(got), Ok(want)) => judge(&got, &want, tolerance),
        };
        self.push(opcode, format, name, outcome);
    }

    fn push(
        &mut self,
        opcode: u32,
        weight_format: Option<KilnWeightFormat>,
        name: String,
        outcome: Outcome,
    ) {
        self.report.cases.push(Case {
            opcode,
            weight_format,
            act_dtype: self.dut.act,
            name,
            outcome,
        });
    }
}

fn judge(got: &[f32], want: &[f32], tolerance: f64) -> Outcome {
    if got.len() != want.len() {
        return Outcome::Error(format!(
            "{} values where the reference has {}",
            got.len(),
            want.len()
        ));
    }
    let rms = (want.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / want.len().max(1) as f64)
        .sqrt()
        .max(1e-6);
    let max_abs = if got.iter().any(|v| !v.is_finite()) {
        f64::INFINITY
    } else {
        got.iter()
            .zip(want)
            .map(|(a, b)| ((*a - *b) as f64).abs())
            .fold(0.0, f64::max)
    };
    let errors = Errors {
        max_abs,
        relative: max_abs / rms,
        tolerance,
    };
    if errors.relative <= tolerance {
        Outcome::Passed(errors)
    } else {
        Outcome::Failed(errors)
    }
}
