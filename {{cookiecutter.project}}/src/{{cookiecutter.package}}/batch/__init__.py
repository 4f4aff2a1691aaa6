"""Batch scoring with the champion: the output's columns, whichever engine scores.

`chunked` scores a file on this machine, chunk by chunk, in flat memory.
"""

PREDICTION, MODEL_VERSION, SCORED_AT = "prediction", "model_version", "scored_at"
PROBABILITY_PREFIX = "probability_"  # + a class label: a classifier's probability of that class
