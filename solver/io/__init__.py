"""What touches the disk or the machine: model loading and conversion (GGUF, the hub, the
built-in default), input checks, texts and token windows, checkpoints, machine facts."""
