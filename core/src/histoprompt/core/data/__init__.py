"""Package data: the MSigDB Hallmark v7.0 GMT (CC BY 4.0, see README.md here)."""
