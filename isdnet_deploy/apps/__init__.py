"""Applications over the runtime: folders of files in, label maps and metrics out.

What a C-adjacent caller embeds lives in ``isdnet_deploy.runtime``; file discovery,
dataset pairing, GeoTIFF handling, batch bookkeeping and evaluation live here, so the
runtime does not carry them.
"""
