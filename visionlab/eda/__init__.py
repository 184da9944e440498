"""Exploratory data analysis: what the data is, what is wrong with it, what it means for a model.

    stats.py        class counts, channel statistics, brightness/contrast, class mean images,
                    pixel correlation, original sizes
    quality.py      exact and near duplicates, blank images, outliers
    handcrafted.py  Sobel, Canny, LBP, HOG (scikit-image) and a HOG + linear SVM baseline
    figures.py      the PNGs
    run.py          run_eda: dataset -> eda.json, figures, eda.html (rendered by visionlab.report)
"""
from .run import observations, run_eda

__all__ = ["observations", "run_eda"]
