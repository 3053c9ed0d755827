"""Model building (the tiny local Qwen2.5-VL) and the one loading path for every stage."""
