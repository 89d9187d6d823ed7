"""Collect images: web search, download, de-duplication and the bootstrap job that ties them together."""
