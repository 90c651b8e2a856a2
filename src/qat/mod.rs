//! Quantization-aware training (QAT): fake quantization of the weights and activation inputs of
//! the quantizable nodes (Conv, Gemm, MatMul), forward and reverse-mode backward passes over the
//! CNN/MLP op set, the clipped straight-through estimator, moving-average min/max observers,
//! SGD with momentum and Adam.
//!
//! Flow: [`QatModel::prepare`] (graph + [`QatConfig`]) -> [`QatModel::calibrate`] (observers) ->
//! [`QatModel::fit`] (built-in loop with [`QatHooks`]) or your own loop over
//! [`QatModel::train_step`] -> [`QatModel::convert`] (an fp32 graph with the learned weights, for
//! the PTQ pipeline).

pub mod fake_quant;
pub mod optim;
pub mod tape;

pub use fake_quant::{FqParams, RangeObserver};
pub use optim::{OptimKind, Optimizer};
pub use tape::{softmax_ce, Buf, FqMode, FqSettings, Param, Tape};

use octet_ir::{Graph, Op, Tensor};

/// QAT settings.
#[derive(Clone, Debug)]
pub struct QatConfig {
    /// Weight bits (symmetric signed grid: 8 -> [-127, 127], 4 -> [-7, 7]).
    pub weight_bits: u32,
    /// Per-output-channel weight scales (else per tensor).
    pub per_channel: bool,
    /// Drop one weight bit (x86 without VNNI).
    pub reduce_range: bool,
    /// Activation bits (asymmetric unsigned grid).
    pub activation_bits: u32,
    /// Fake-quantize activations (inputs of Conv/Gemm/MatMul) too.
    pub quantize_activations: bool,
    /// Moving-average weight of a new batch in the activation observers.
    pub observer_momentum: f32,
    pub lr: f32,
    pub weight_decay: f32,
    pub epochs: usize,
    pub batch: usize,
    pub optimizer: OptimKind,
    pub seed: u64,
}

impl Default for QatConfig {
    fn default() -> Self {
        QatConfig {
            weight_bits: 8,
            per_channel: true,
            reduce_range: false,
            activation_bits: 8,
            quantize_activations: true,
            observer_momentum: 0.01,
            lr: 1e-3,
            weight_decay: 0.0,
            epochs: 3,
            batch: 32,
            optimizer: OptimKind::adam(),
            seed: 0,
        }
    }
}

impl QatConfig {
    fn settings(&self) -> FqSettings {
        FqSettings {
            weight_bits: self.weight_bits,
            per_channel: self.per_channel,
            reduce_range: self.reduce_range,
            activation_bits: self.activation_bits,
        }
    }
    /// Forward mode for training steps (fake quant on, observers updated).
    pub fn train_mode(&self) -> FqMode {
        FqMode {
            weights: true,
            activations: self.quantize_activations,
            observe: Some(Some(self.observer_momentum)),
        }
    }
    /// Forward mode for quantized evaluation (fake quant on, observers frozen).
    pub fn eval_mode(&self) -> FqMode {
        FqMode {
            weights: true,
            activations: self.quantize_activations,
            observe: None,
        }
    }
}

/// Per-epoch figures reported to hooks.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochStats {
    pub epoch: usize,
    pub loss: f32,
    /// Quantized (fake-quant) accuracy on the eval set, when one was given.
    pub eval_accuracy: Option<f32>,
}

/// Callbacks of the built-in loop. All have empty defaults.
pub trait QatHooks {
    fn on_train_begin(&mut self, _m: &QatModel) {}
    fn on_batch_end(&mut self, _epoch: usize, _batch: usize, _loss: f32) {}
    fn on_epoch_end(&mut self, _m: &QatModel, _s: &EpochStats) {}
    fn on_train_end(&mut self, _m: &QatModel, _history: &[EpochStats]) {}
}

/// Hooks that do nothing.
pub struct NoHooks;
impl QatHooks for NoHooks {}

/// A graph prepared for QAT: the tape, its trainable parameters, observers and optimizer.
pub struct QatModel {
    pub graph: Graph,
    pub cfg: QatConfig,
    pub tape: Tape,
    pub params: Vec<Param>,
    pub optimizer: Optimizer,
    rng: u64,
}

/// Flatten a labelled data set: an f32 tensor `[N, ...]` into a [`Buf`].
pub fn to_buf(t: &Tensor) -> anyhow::Result<Buf> {
    let v = t
        .view::<f32>()
        .map_err(|e| anyhow::anyhow!("qat: inputs must be f32: {e:?}"))?;
    Ok(Buf::new(t.shape().to_vec(), v.to_vec()))
}

fn rows(x: &Buf, idx: &[usize]) -> Buf {
    let per: usize = x.shape[1..].iter().product();
    let mut data = Vec::with_capacity(idx.len() * per);
    for &i in idx {
        data.extend_from_slice(&x.data[i * per..(i + 1) * per]);
    }
    let mut shape = x.shape.clone();
    shape[0] = idx.len();
    Buf::new(shape, data)
}

impl QatModel {
    /// Build the training program for `graph` (one input, one output; Conv/Gemm weights constant).
    pub fn prepare(graph: &Graph, cfg: QatConfig) -> anyhow::Result<Self> {
        let (tape, params) = Tape::from_graph(graph, cfg.settings()).map_err(anyhow::Error::msg)?;
        let sizes: Vec<usize> = params.iter().map(|p| p.data.len()).collect();
        let optimizer = Optimizer::new(cfg.optimizer, cfg.lr, cfg.weight_decay, &sizes);
        let rng = cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        Ok(QatModel {
            graph: graph.clone(),
            cfg,
            tape,
            params,
            optimizer,
            rng,
        })
    }

    /// Run `x` through the model in batches with the given mode; returns the outputs.
    pub fn predict(&mut self, x: &Buf, mode: FqMode) -> Buf {
        let n = x.shape[0];
        let bs = self.cfg.batch.max(1) * 4;
        let mut out: Option<Buf> = None;
        for s in (0..n).step_by(bs) {
            let idx: Vec<usize> = (s..(s + bs).min(n)).collect();
            let y = self.tape.forward(rows(x, &idx), &self.params, mode);
            match &mut out {
                None => out = Some(y),
                Some(o) => {
                    o.shape[0] += y.shape[0];
                    o.data.extend(y.data);
                }
            }
        }
        out.unwrap_or_default()
    }

    /// Post-training calibration of the activation observers: running min/max over `x` with
    /// fake-quantized weights (what PTQ would do).
    pub fn calibrate(&mut self, x: &Buf) {
        for o in &mut self.tape.observers {
            *o = RangeObserver::default();
        }
        let mode = FqMode {
            weights: true,
            activations: false,
            observe: Some(None),
        };
        self.predict(x, mode);
    }

    /// Top-1 accuracy on `(x, labels)`; `quantized` evaluates with fake quantization (observers
    /// frozen), otherwise in fp32.
    pub fn evaluate(&mut self, x: &Buf, labels: &[i64], quantized: bool) -> f32 {
        let mode = if quantized {
            self.cfg.eval_mode()
        } else {
            FqMode::FP32
        };
        let y = self.predict(x, mode);
        accuracy(&y, labels)
    }

    /// Loss, parameter gradients and input gradient of one batch.
    pub fn loss_and_grads(
        &mut self,
        x: Buf,
        labels: &[i64],
        mode: FqMode,
    ) -> (f32, Vec<Vec<f32>>, Buf) {
        let y = self.tape.forward(x, &self.params, mode);
        let (loss, dy) = softmax_ce(&y, labels);
        let mut grads: Vec<Vec<f32>> = self
            .params
            .iter()
            .map(|p| vec![0.0; p.data.len()])
            .collect();
        let dx = self.tape.backward(dy, &self.params, &mut grads);
        (loss, grads, dx)
    }

    /// One optimizer step on one batch (for user-written loops). Returns the batch loss.
    pub fn train_step(&mut self, x: Buf, labels: &[i64]) -> f32 {
        let mode = self.cfg.train_mode();
        let (loss, grads, _) = self.loss_and_grads(x, labels, mode);
        let mut ps: Vec<&mut [f32]> = self
            .params
            .iter_mut()
            .map(|p| p.data.as_mut_slice())
            .collect();
        self.optimizer.step(&mut ps, &grads);
        loss
    }

    fn next_rand(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// One shuffled pass over the training set; returns the mean batch loss.
    pub fn train_epoch(
        &mut self,
        x: &Buf,
        labels: &[i64],
        epoch: usize,
        hooks: &mut dyn QatHooks,
    ) -> f32 {
        let n = x.shape[0];
        let mut idx: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = (self.next_rand() % (i as u64 + 1)) as usize;
            idx.swap(i, j);
        }
        let bs = self.cfg.batch.max(1);
        let mut total = 0f64;
        let mut count = 0;
        for (b, chunk) in idx.chunks(bs).enumerate() {
            let lbl: Vec<i64> = chunk.iter().map(|&i| labels[i]).collect();
            let loss = self.train_step(rows(x, chunk), &lbl);
            hooks.on_batch_end(epoch, b, loss);
            total += loss as f64;
            count += 1;
        }
        (total / count.max(1) as f64) as f32
    }

    /// The built-in loop: `cfg.epochs` epochs, quantized eval accuracy after each when `eval`
    /// is given.
    pub fn fit(
        &mut self,
        train: (&Buf, &[i64]),
        eval: Option<(&Buf, &[i64])>,
        hooks: &mut dyn QatHooks,
    ) -> Vec<EpochStats> {
        hooks.on_train_begin(self);
        if self.tape.observers.iter().any(|o| !o.initialized) {
            let n = train.0.shape[0].min(256);
            let idx: Vec<usize> = (0..n).collect();
            self.calibrate(&rows(train.0, &idx));
        }
        let mut history = vec![];
        for epoch in 0..self.cfg.epochs {
            let loss = self.train_epoch(train.0, train.1, epoch, hooks);
            let eval_accuracy = eval.map(|(x, l)| self.evaluate(x, l, true));
            let s = EpochStats {
                epoch,
                loss,
                eval_accuracy,
            };
            hooks.on_epoch_end(self, &s);
            history.push(s);
        }
        hooks.on_train_end(self, &history);
        history
    }

    /// The graph with the learned weights. With `bake_fake_quant` the weights are replaced by
    /// their fake-quantized values (so any later quantizer with the same grid reproduces them
    /// exactly); otherwise the raw trained fp32 weights.
    pub fn convert(&self, bake_fake_quant: bool) -> Graph {
        let mut g = self.graph.clone();
        for p in &self.params {
            let (w, _) = self.tape.effective_weight(p, bake_fake_quant);
            g.node_mut(p.const_node).op = Op::Const(Tensor::from_vec(&p.shape, w));
        }
        g
    }

    /// Activation ranges learned by the observers, by quantized layer order.
    pub fn activation_ranges(&self) -> Vec<(f32, f32)> {
        self.tape.observers.iter().map(|o| (o.min, o.max)).collect()
    }
}

/// Top-1 accuracy of `logits` (`[N, C]`) against `labels`.
pub fn accuracy(logits: &Buf, labels: &[i64]) -> f32 {
    let n = logits.shape[0];
    let c = logits.data.len() / n.max(1);
    let mut ok = 0;
    for (row, &label) in logits.data.chunks(c.max(1)).take(n).zip(labels) {
        let arg = row
            .iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |(bi, bv), (j, &v)| {
                if v > bv {
                    (j, v)
                } else {
                    (bi, bv)
                }
            })
            .0;
        ok += (arg as i64 == label) as usize;
    }
    ok as f32 / n.max(1) as f32
}
