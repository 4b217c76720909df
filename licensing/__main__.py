from facegrid.licensing.main import main

main()
