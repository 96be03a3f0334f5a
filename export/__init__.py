"""rtgrasp export: merged checkpoint → bundle (GGUF + ONNX + manifest)."""
