"""Analysis of a finished run, from its predictions record: t-SNE of the test features, where the
mistakes sit relative to the train class centroids, conv feature maps of a few images, and an
overfitting flag from the training curves. ``analyze_run`` does all of it for one run folder."""
from .centroids import find_mistakes, summarize
from .curves import overfit_flag
from .run import analyze_run
from .tsne import TSNEConfig, embed_tsne, stratified_subsample

__all__ = ["TSNEConfig", "analyze_run", "embed_tsne", "find_mistakes", "overfit_flag", "stratified_subsample",
           "summarize"]
