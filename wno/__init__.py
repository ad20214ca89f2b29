"""wno: the Wavelet Transformer (W-MSA) and a platform for ablation studies on GPUs.

Model library: `wno.model`, `wno.model.vit`, `wno.training.data`, `wno.training`, `wno.training.config`.
Platform (Optuna queue, workers, MLflow tracking, reports): `wno.platform`.
"""

__version__ = "0.1.0"
