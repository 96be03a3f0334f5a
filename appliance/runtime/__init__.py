"""The model at run time, with no torch: bundle → onnxruntime vision + llama.cpp decoding → pose."""
