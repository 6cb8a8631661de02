"""Figures and tables that people read: data overview now; retrieval, k-NN, UMAP later."""
