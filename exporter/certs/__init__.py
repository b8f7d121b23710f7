"""Pure certificate analysis: parsing to ``CertFacts`` (``parse``), the verdict on a chain (``chain``), CRL
revocation (``revocation``), lints (``lints``) and the trust files it reads, cached until they change
(``files``). Imports only ``exporter.results``, ``exporter.config``, the standard library and
cryptography: never the probe."""
