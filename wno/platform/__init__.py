"""The ablation platform: study specs, the Optuna queue, workers, MLflow tracking, reports.

Lives inside `wno` because a top-level package named `platform` would shadow the standard
library module that torch and mlflow import.
"""
