"""Model files and the engines that run them: LiteRT (``litert``) and ONNX Runtime
(``onnxrt``), the metadata every model carries (``metadata``, ``embedded``) and which
bundled model runs when none is named (``bundled``)."""
