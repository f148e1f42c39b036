"""The public estimators (scikit-learn style: fit / predict / transform / score, save / load)."""
