"""Stage 3, `faceproc evaluate`: predictions, the accuracy table and report.html under OUT/reports/."""
