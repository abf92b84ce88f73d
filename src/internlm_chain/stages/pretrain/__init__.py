"""The `pretrain` stage."""
