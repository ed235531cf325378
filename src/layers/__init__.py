"""Reusable building blocks (attention, deformable attention, embeddings, MLPs, box ops)."""
