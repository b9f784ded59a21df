"""Real-time recommender on a sharded embedding key-value store.

Embedding rows live in a store (in-process shards by default, Redis or Redis Cluster when a server
is given), models read their sparse features through it, training writes back only the rows it
changed, and a serving endpoint reads them fresh.
"""
