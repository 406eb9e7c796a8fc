"""Running a trained model: ``inputs`` (motion files, dataset pickles and HybrIK results read into
validated records, paired with standards, featurised as training does), ``decode`` (loading a run
or an export, and the one decode function with its reranking), ``pictures`` (skeletons, attention
maps, training curves) and ``page`` (the web page's work, without the web)."""
