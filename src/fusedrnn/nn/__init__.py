"""Training: losses, optimisers, truncated backpropagation through time and checkpoints.
Use them as `fr.losses`, `fr.optim`, `fr.train` and `fr.save` / `fr.load` (`fusedrnn.checkpoint`)."""
