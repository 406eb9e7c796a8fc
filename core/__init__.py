"""The ground floor: what every other package may use, importing nothing of the project's.

``io`` (atomic writes, the safe checkpoint reader), ``cider`` (the CIDEr-D core and caption
normalisation), ``ptb_tokenizer`` (COCO's PTB tokenisation in pure Python) and ``motion_stats``
(the motion statistics that retrieval and the baselines share).
"""
