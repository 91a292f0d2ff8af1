from pocket3d.cli import main

main()
