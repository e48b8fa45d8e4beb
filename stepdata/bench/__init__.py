"""Measuring localizers and models against labelled data sets."""
