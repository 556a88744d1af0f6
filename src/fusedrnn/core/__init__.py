"""The layers on the fused kernels (LSTM, RNN, GRU, Linear, Sequential), their shared base
(`_layer`), argument checks (`_validate`), workspaces and threads. Use them as `fr.LSTM` etc."""
