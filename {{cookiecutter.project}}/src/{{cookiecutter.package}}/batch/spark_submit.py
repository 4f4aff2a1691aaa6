"""PLACEHOLDER for the Spark engine's spark-submit entry point (built on another branch).

`spark-submit spark_submit.py --input URI --output URI --model-name NAME --version N`, with
MLFLOW_TRACKING_URI in the environment. Only here so that `batch-submit` has a file to upload.
"""

raise SystemExit("placeholder: the Spark entry point is not on this branch")
