"""`edge-seg tune`: find the variants (``variants``) and frames (``frames``), measure every
variant x threads x delegate (``measure``), choose the fastest accurate one (``choose``) and
report it (``report``); ``command`` ties them together."""
