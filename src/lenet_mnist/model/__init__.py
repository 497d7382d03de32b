"""The networks as plain nn.Modules, their saved weights, and the one batched forward pass."""
