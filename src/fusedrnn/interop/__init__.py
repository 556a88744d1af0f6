"""The internals of the bridges to other libraries: weight mapping to and from torch (`_torch`)
and Keras (`_keras`), the torch operators and streams, and ONNX graph building and reading
(`_onnx_graph`, `_onnx_scan`). The public modules are `fusedrnn.torch` and `fusedrnn.onnx`."""
