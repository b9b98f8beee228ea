from fleetjobs.cli import main

main()
