"""The real-time sample join (``stream_join``): live event sources joined into data blocks on both sides;
continual training on those blocks (``stream_train``)."""
