"""Watch the served model: data drift of logged features, and the primary metric once labels arrive.

The service logs a sample of what it served (`prediction_log`: one folder per day, the log's columns
plus one column per training feature, float64 or text for a categorical one). `drift` compares a
window of logged features with the training data (Evidently); `performance` joins logged predictions
with labels that arrive later (files with request_id, row, label) and computes the gate's primary
metric per window against the champion's holdout metric. Both count how many of the latest windows
in a row were flagged (`windows`), so a scheduled workflow decides on retraining from their reports
alone; `ab_test` compares two versions that answered live traffic on the labelled requests each
answered; `verdict` turns the two reports into what the monitor workflow does. Evidently takes seconds
to import: only `drift.data_drift` does.
"""
