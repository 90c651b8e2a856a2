//! Optimizers over flat parameter vectors: SGD with momentum and Adam.

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OptimKind {
    Sgd { momentum: f32 },
    Adam { beta1: f32, beta2: f32, eps: f32 },
}

impl OptimKind {
    pub fn adam() -> Self {
        OptimKind::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Optimizer {
    pub kind: OptimKind,
    pub lr: f32,
    pub weight_decay: f32,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    t: i32,
}

impl Optimizer {
    pub fn new(kind: OptimKind, lr: f32, weight_decay: f32, sizes: &[usize]) -> Self {
        Optimizer {
            kind,
            lr,
            weight_decay,
            m: sizes.iter().map(|&n| vec![0.0; n]).collect(),
            v: sizes.iter().map(|&n| vec![0.0; n]).collect(),
            t: 0,
        }
    }

    /// One update of every parameter `params[i] -= f(grads[i])`.
    pub fn step(&mut self, params: &mut [&mut [f32]], grads: &[Vec<f32>]) {
        self.t += 1;
        let lr = self.lr;
        let wd = self.weight_decay;
        for (i, p) in params.iter_mut().enumerate() {
            let g = &grads[i];
            match self.kind {
                OptimKind::Sgd { momentum } => {
                    let m = &mut self.m[i];
                    for j in 0..p.len() {
                        let gj = g[j] + wd * p[j];
                        m[j] = momentum * m[j] + gj;
                        p[j] -= lr * m[j];
                    }
                }
                OptimKind::Adam { beta1, beta2, eps } => {
                    let bc1 = 1.0 - beta1.powi(self.t);
                    let bc2 = 1.0 - beta2.powi(self.t);
                    let (m, v) = (&mut self.m[i], &mut self.v[i]);
                    for j in 0..p.len() {
                        let gj = g[j] + wd * p[j];
                        m[j] = beta1 * m[j] + (1.0 - beta1) * gj;
                        v[j] = beta2 * v[j] + (1.0 - beta2) * gj * gj;
                        let mh = m[j] / bc1;
                        let vh = v[j] / bc2;
                        p[j] -= lr * mh / (vh.sqrt() + eps);
                    }
                }
            }
        }
    }
}
