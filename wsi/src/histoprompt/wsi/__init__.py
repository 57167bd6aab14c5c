"""histoprompt.wsi: whole-slide images read by ranged GETs, tissue, tiles, and the slide
processor that ingest and the CLI share. No torch, no Kafka.

Modules: `sources` (open from S3 or local files, format sniffing), `dicom` and `tiff`
(readers), `codecs`, `ranged` (byte sources, block cache, range coalescing), `tissue`,
`tiling` (level choice, tile grid), `scoring` (the slide processor), `triton` (the
inference client), `limits`, `errors`.
"""
