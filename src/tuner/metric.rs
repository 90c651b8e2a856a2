//! Evaluation metrics for tuning: top-1 accuracy against labels, or fidelity to the fp32
//! model's outputs (mean cosine similarity, negative MSE, top-1 agreement) when there are no
//! labels. Every metric is "higher is better" except where [`Metric::higher_is_better`] says.

use octet_ir::Tensor;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Top-1 accuracy of the first output against a `label` array.
    Top1,
    /// Mean cosine similarity of each sample's first output to the fp32 model's (per row of the
    /// last axis: per token for sequence models).
    Cosine,
    /// Mean squared error to the fp32 model's first output (lower is better).
    Mse,
    /// Fraction of samples whose arg-max agrees with the fp32 model's.
    Agreement,
}

impl Metric {
    pub fn parse(s: &str) -> Option<Metric> {
        Some(match s.to_ascii_lowercase().as_str() {
            "top1" | "accuracy" => Metric::Top1,
            "cosine" => Metric::Cosine,
            "mse" => Metric::Mse,
            "agreement" | "top1-agreement" => Metric::Agreement,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Metric::Top1 => "top1",
            Metric::Cosine => "cosine",
            Metric::Mse => "mse",
            Metric::Agreement => "agreement",
        }
    }
    pub fn higher_is_better(self) -> bool {
        self != Metric::Mse
    }
}

fn argmax(row: &[f64]) -> usize {
    (0..row.len()).fold(0, |b, j| if row[j] > row[b] { j } else { b })
}

/// Score `out` (the first output, batch first) by `metric`. `reference` is the fp32 output for
/// fidelity metrics; `labels` for top-1.
pub fn score(
    metric: Metric,
    out: &Tensor,
    reference: Option<&Tensor>,
    labels: Option<&[i64]>,
) -> Result<f64, String> {
    let v = out.to_f64_vec();
    let n = *out.shape().first().ok_or("output is a scalar")?;
    if n == 0 {
        return Err("empty output".into());
    }
    match metric {
        Metric::Top1 => {
            let labels = labels.ok_or("top1 needs a 'label' array in the evaluation data")?;
            if labels.len() != n {
                return Err(format!("{} labels for {n} samples", labels.len()));
            }
            let c = v.len() / n;
            let hits = (0..n)
                .filter(|&i| argmax(&v[i * c..(i + 1) * c]) as i64 == labels[i])
                .count();
            Ok(hits as f64 / n as f64)
        }
        Metric::Cosine | Metric::Mse | Metric::Agreement => {
            let r = reference
                .ok_or("fidelity metrics need the fp32 outputs")?
                .to_f64_vec();
            if r.len() != v.len() {
                return Err("output size differs from the fp32 model's".into());
            }
            match metric {
                Metric::Mse => Ok(v
                    .iter()
                    .zip(&r)
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum::<f64>()
                    / v.len() as f64),
                Metric::Agreement => {
                    let c = v.len() / n;
                    let same = (0..n)
                        .filter(|&i| {
                            argmax(&v[i * c..(i + 1) * c]) == argmax(&r[i * c..(i + 1) * c])
                        })
                        .count();
                    Ok(same as f64 / n as f64)
                }
                _ => {
                    let d = *out.shape().last().unwrap_or(&1);
                    let rows = v.len() / d.max(1);
                    let mut total = 0.0;
                    for i in 0..rows {
                        let (a, b) = (&v[i * d..(i + 1) * d], &r[i * d..(i + 1) * d]);
                        let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
                        let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
                        let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
                        total += if na == 0.0 && nb == 0.0 {
                            1.0
                        } else {
                            dot / (na * nb).max(1e-30)
                        };
                    }
                    Ok(total / rows as f64)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_score_known_cases() {
        let out = Tensor::from_vec(&[2, 3], vec![1f32, 5., 2., 9., 0., 1.]);
        assert_eq!(score(Metric::Top1, &out, None, Some(&[1, 2])).unwrap(), 0.5);
        assert!((score(Metric::Cosine, &out, Some(&out), None).unwrap() - 1.0).abs() < 1e-12);
        assert_eq!(score(Metric::Mse, &out, Some(&out), None).unwrap(), 0.0);
        let other = Tensor::from_vec(&[2, 3], vec![0f32, 5., 2., 0., 0., 1.]);
        assert_eq!(
            score(Metric::Agreement, &other, Some(&out), None).unwrap(),
            0.5
        );
        assert!(score(Metric::Top1, &out, None, None)
            .unwrap_err()
            .contains("label"));
    }
}
