"""The project's HDF5 data set format, its reader and writer, and the importers of public data sets."""
