"""results.json, figures and report.html."""
