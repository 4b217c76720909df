from facegrid.extractor.main import main

main()
