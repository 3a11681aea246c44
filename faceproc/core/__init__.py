"""What every stage shares: storage, the OUT layout, schemas, the manifest and its live-row readers."""
