"""The wire: how tensors travel between ranks (a fixed header of names, dtypes and shapes,
then raw buffers; never pickle), over MPI or in one process, with byte counts."""
