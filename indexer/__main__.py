from facegrid.indexer.main import main

main()
