"""The base layer: leaf modules every other layer may import, importing nothing of wno above.

    errors          UserError / Unavailable with their exit codes, one_line (an error as one line)
    variants        the named choices every layer agrees on (models, token layouts, attention paths)
    datasets        what is known about each data set without loading it (DATASETS)
    sizes           the named model sizes (MODEL_SIZES)
    wavelet_levels  which wavelet reaches which depth on which image, without torch
    utils           secrets masking, atomic writes, the CPU allocator setting

None of these imports torch, so configurations validate and study commands stay fast.
"""
