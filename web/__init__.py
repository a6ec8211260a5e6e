"""sarchive-web: the archive's pages and JSON API, behind a site's authenticating proxy."""
