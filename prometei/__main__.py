from prometei.cli import main

main()
