from facegrid.video.main import main

main()
