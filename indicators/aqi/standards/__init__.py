"""One module per index standard; each defines `STANDARD` as data, no behaviour.

May import: the standard library and `indicators.aqi.model` only.
"""
