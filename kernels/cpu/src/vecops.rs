//! Small vector primitives (dot product, scaled add) with run-time ISA
//! dispatch. Each has a fixed reduction order for a given length and ISA.

use crate::isa::{Isa, detect};

/// `Σ a[i]·b[i]`.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    match detect() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `detect` verified the CPU features.
        Isa::Avx512Vnni => unsafe { x86::dot512(a, b) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 => unsafe { x86::dot256(a, b) },
        _ => a.iter().zip(b).fold(0.0, |s, (x, y)| s + x * y),
    }
}

/// `acc[i] += alpha·x[i]`.
#[inline]
pub fn axpy(acc: &mut [f32], alpha: f32, x: &[f32]) {
    match detect() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `detect` verified the CPU features.
        Isa::Avx512Vnni => unsafe { x86::axpy512(acc, alpha, x) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 => unsafe { x86::axpy256(acc, alpha, x) },
        _ => {
            for (a, v) in acc.iter_mut().zip(x) {
                *a += alpha * v;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma,avx512f")]
    pub unsafe fn dot512(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let mut acc = _mm512_setzero_ps();
        let mut i = 0;
        while i + 16 <= n {
            // SAFETY: `i + 16 <= n`.
            unsafe {
                acc = _mm512_fmadd_ps(
                    _mm512_loadu_ps(a.as_ptr().add(i)),
                    _mm512_loadu_ps(b.as_ptr().add(i)),
                    acc,
                );
            }
            i += 16;
        }
        let mut s = _mm512_reduce_add_ps(acc);
        while i < n {
            s += a[i] * b[i];
            i += 1;
        }
        s
    }

    #[target_feature(enable = "avx2,fma,avx512f")]
    pub unsafe fn axpy512(acc: &mut [f32], alpha: f32, x: &[f32]) {
        let n = acc.len().min(x.len());
        let va = _mm512_set1_ps(alpha);
        let mut i = 0;
        while i + 16 <= n {
            // SAFETY: `i + 16 <= n`.
            unsafe {
                let p = acc.as_mut_ptr().add(i);
                _mm512_storeu_ps(
                    p,
                    _mm512_fmadd_ps(va, _mm512_loadu_ps(x.as_ptr().add(i)), _mm512_loadu_ps(p)),
                );
            }
            i += 16;
        }
        while i < n {
            acc[i] += alpha * x[i];
            i += 1;
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot256(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let mut acc = _mm256_setzero_ps();
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: `i + 8 <= n`.
            unsafe {
                acc = _mm256_fmadd_ps(
                    _mm256_loadu_ps(a.as_ptr().add(i)),
                    _mm256_loadu_ps(b.as_ptr().add(i)),
                    acc,
                );
            }
            i += 8;
        }
        let lo = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
        let lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
        let mut s = _mm_cvtss_f32(_mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1)));
        while i < n {
            s += a[i] * b[i];
            i += 1;
        }
        s
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn axpy256(acc: &mut [f32], alpha: f32, x: &[f32]) {
        let n = acc.len().min(x.len());
        let va = _mm256_set1_ps(alpha);
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: `i + 8 <= n`.
            unsafe {
                let p = acc.as_mut_ptr().add(i);
                _mm256_storeu_ps(
                    p,
                    _mm256_fmadd_ps(va, _mm256_loadu_ps(x.as_ptr().add(i)), _mm256_loadu_ps(p)),
                );
            }
            i += 8;
        }
        while i < n {
            acc[i] += alpha * x[i];
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_and_axpy() {
        let a: Vec<f32> = (0..37).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..37).map(|i| 1.0 - i as f32 * 0.1).collect();
        let want: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
        assert!((dot(&a, &b) as f64 - want).abs() < 1e-3);
        let mut acc = vec![1.0f32; 37];
        axpy(&mut acc, 2.0, &a);
        assert!(
            acc.iter()
                .zip(&a)
                .all(|(s, x)| (s - (1.0 + 2.0 * x)).abs() < 1e-6)
        );
    }
}
